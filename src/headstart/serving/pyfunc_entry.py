"""MLflow models-from-code entry: the registered model is this file plus safetensors weights (no pickle)."""

import mlflow
from mlflow.pyfunc import PythonModel


class HeadstartPyfunc(PythonModel):
    def load_context(self, context):
        from pathlib import Path

        from headstart.serving import ARTIFACT_KEY, Classifier

        self.classifier = Classifier(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context, model_input, params=None):
        return self.classifier.predict(model_input)


mlflow.models.set_model(HeadstartPyfunc())
