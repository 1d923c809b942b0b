"""Image-aware dataset validation: layout, integrity, leakage, distribution and drift checks.

Submodules are imported by the validate step on demand; nothing heavy (GX, MLflow, matplotlib)
is imported here, so `import headstart.validation` stays cheap.
"""
