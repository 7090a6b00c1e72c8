"""What every command shares with the person at the terminal: one line per mistake and exit 2
(``errors``), the Hydra front door that checks keys before any slow import and work (``app``),
output directories a command may write and how it replaces them (``outputs``), finite-number
checks of config values (``checks``) and the tables a command ends with (``console``).

The bottom layer of the package: it imports nothing else of ``cllm4rec_dist`` (but its version),
and no torch, so a command can print its first line before loading anything slow.
"""
