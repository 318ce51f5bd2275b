"""Reporting for the weekly improvement cycle: the report model and its queries, its HTML and
terminal renderers, and the prompt registry. Renderers import the model, never the other way round."""
