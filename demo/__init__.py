"""The Gradio demo (``demo.app.build_demo``) and the sample media it and the quickstart use."""
