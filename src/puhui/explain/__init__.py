"""Explanations and audits: attributions per task (Captum on our torch modules, SHAP for tabular models) and
group metrics (fairlearn), in one response shape (`shape.Explanation`), with their pictures.

Captum, SHAP and fairlearn are imported inside the functions that need them (`requires`)."""
