"""svutils: which singular values of a fine-tuned transformer does a task depend on.

The package holds the logic behind the notebooks of the book: architecture adapters
(`svutils.models`), exact band removal (`svutils.svd`), the ablation grid and its results
store (`svutils.ablation`, `svutils.store`), tasks, data and fine-tuning (`svutils.tasks`,
`svutils.data`, `svutils.finetune`), statistics (`svutils.stats`), spectra
(`svutils.spectra`), charts (`svutils.charts`) and the runner (`python -m svutils run`).
"""

__version__ = "0.1.0"
