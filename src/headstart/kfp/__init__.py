"""The Kubeflow Pipelines driver: the pipeline, its components, and compiling, running and scheduling it.

`pipeline` is the @dsl.pipeline (wiring only), `components` the lightweight components, each a signature and
one call into `bodies`; the spec is compiled from this installed package (`spec`), images and pool settings
chosen at compile time (`settings`). `local` runs it with kfp.local, `remote` submits and schedules it.
Inside this package `import kfp` is still the kfp package: imports are absolute, never relative.
"""
