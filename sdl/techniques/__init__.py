"""The built-in techniques, one folder each; every folder's `__init__.py` is its declaration
(`TECHNIQUE`), registered under the entry-point group `sdl.techniques` like a third party's.
Nothing outside sdl/techniques/ imports these folders: the framework finds them by entry point."""
