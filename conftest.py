"""pytest, for the tests and for nbval's notebook kernels (which run in notebooks/): a data, results
or cache directory given as a relative path means the folder it names from where pytest started."""
from ifm.data import pin_directories

pin_directories()
