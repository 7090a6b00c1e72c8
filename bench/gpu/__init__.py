"""The GPU check (gpu_check.py) and its parts."""
