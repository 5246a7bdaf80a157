"""Generation: emotion-directed images (diffusion) and the talking head.

Empty until the image-generation and talking-head issues land; see docs/ARCHITECTURE.md.
"""
