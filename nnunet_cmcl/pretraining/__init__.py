"""The CMCL method: config, views, disruptions, heads, model, loss, metrics and the pretraining trainers."""
