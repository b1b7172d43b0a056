__version__ = "0.1.0"

# %% auto 0
__all__ = []

# %% ../nbs/00_config.ipynb 25
_PUBLIC = {
    "JupyterHealthCHClient": "client", "ResourceHolder": "client",
    "JupyterHealthSettings": "config", "JupyterHealthError": "config",
    "to_frame": "frames", "bp_frame": "frames",
    "bp_summary": "bp", "plot_blood_pressure": "plots",
}

def __getattr__(name: str):
    "Import a public name from its module on first use."
    if name not in _PUBLIC: raise AttributeError(f"module 'jupyter_health' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"jupyter_health.{_PUBLIC[name]}"), name)

# %% ../nbs/00_config.ipynb 25
_PUBLIC = {
    "JupyterHealthCHClient": "client", "ResourceHolder": "client",
    "JupyterHealthSettings": "config", "JupyterHealthError": "config",
    "to_frame": "frames", "bp_frame": "frames",
    "bp_summary": "bp", "plot_blood_pressure": "plots",
}

def __getattr__(name: str):
    "Import a public name from its module on first use."
    if name not in _PUBLIC: raise AttributeError(f"module 'jupyter_health' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"jupyter_health.{_PUBLIC[name]}"), name)

# %% ../nbs/00_config.ipynb 25
_PUBLIC = {
    "JupyterHealthCHClient": "client", "ResourceHolder": "client",
    "JupyterHealthSettings": "config", "JupyterHealthError": "config",
    "to_frame": "frames", "bp_frame": "frames",
    "bp_summary": "bp", "plot_blood_pressure": "plots",
}

def __getattr__(name: str):
    "Import a public name from its module on first use."
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jupyter_health' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"jupyter_health.{_PUBLIC[name]}"), name)

# %% ../nbs/00_config.ipynb 25
_PUBLIC = {
    "JupyterHealthCHClient": "client", "ResourceHolder": "client",
    "JupyterHealthSettings": "config", "JupyterHealthError": "config",
    "to_frame": "frames", "bp_frame": "frames",
    "bp_summary": "bp", "plot_blood_pressure": "plots",
}

def __getattr__(name: str):
    "Import a public name from its module on first use."
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jupyter_health' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"jupyter_health.{_PUBLIC[name]}"), name)

# %% ../nbs/00_config.ipynb 25
_PUBLIC = {
    "JupyterHealthCHClient": "client", "ResourceHolder": "client",
    "JupyterHealthSettings": "config", "JupyterHealthError": "config",
    "to_frame": "frames", "bp_frame": "frames",
    "bp_summary": "bp", "plot_blood_pressure": "plots",
}

def __getattr__(name: str):
    "Import a public name from its module on first use."
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jupyter_health' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"jupyter_health.{_PUBLIC[name]}"), name)