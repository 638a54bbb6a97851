"""sdl: a self-driving laboratory framework.

Heavy dependencies (Ax, torch, sasmodels) are imported lazily by the modules that need them,
so `import sdl` and the CLI's help stay fast.
"""

__version__ = "0.1.0"
