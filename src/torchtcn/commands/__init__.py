"""Sub-commands of the ``torchtcn`` CLI, one module each (see ``torchtcn.cli``)."""
