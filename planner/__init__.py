"""qplan: will this QLoRA fine-tune fit in GPU memory?"""

__version__ = "0.1.0"
