"""`python -m ifm reproduce`: execute the notebooks with papermill and build the book (issue 3; in progress)."""


def add_reproduce_parser(sub):
    pass
