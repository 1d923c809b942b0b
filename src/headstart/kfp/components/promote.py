"""KFP component: act on the gate's decision record (headstart.steps.promote).

The pipeline runs it in both branches of the dsl.If on the decision: it moves the `champion` alias
for a promoted version and tags a rejected one with the reasons.
"""

from kfp.dsl import Artifact, Input


def act_on_decision(
    decision: Input[Artifact], params_json: str, overrides: list, registered_model: str
) -> str:
    """Returns the previous champion version ("" if none or not moved)."""
    from headstart.kfp import bodies

    return bodies.act_on_decision(
        decision=decision, params_json=params_json, overrides=overrides, registered_model=registered_model,
    )
