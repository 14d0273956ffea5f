"""The pages whose runs `python -m ifm fill` plans, by the name `--study` takes, and the results it
derives from trained runs (Table 1's factors): the book hands them to the scheduler
(`ifm.runs.fill`), which knows no page of its own."""
from __future__ import annotations

from ifm.book import factors, studies


def table1(exp):
    """Table 1 on the runner's first dataset (Frappe, as the page, unless the runner names others)."""
    return factors.factor_study(exp, dataset=(exp.datasets or ("frappe",))[0])


def scaling(exp):
    """The data-scaling page's own runs (not the earlier records it also shows)."""
    return studies._scaling_runs(exp, studies.SCALING_FRACTIONS, studies.SCALING_MODELS)


# name -> study, in the order fill takes them (ifm.runs.plan.STUDY_ORDER)
PAGES = {"table3": studies.regression_study, "fig6": studies.convergence_study, "table1": table1,
         "table4": studies.ctr_study, "table2": studies.component_study, "scaling": scaling,
         "depth": studies.depth_study, "dropout": studies.dropout_study, "activation": studies.activation_study}
# what a planned item derives from recorded runs (Wanted.derive's key) -> the function a worker calls
DERIVE = {"factors": factors.factor_seed}
