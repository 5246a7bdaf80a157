"""Generation: emotion-directed images (an offline face diffusion model, any local diffusers text-to-image model
through an emotion prompt rewriter) and expression editing of a portrait by mesh warping along an AU plan.

``generation.create.ImageGenerator`` and ``generation.edit.build_expression_editor`` are the entry points; see
docs/ARCHITECTURE.md. Modules load torch and diffusers, so import them where they are used.
"""
