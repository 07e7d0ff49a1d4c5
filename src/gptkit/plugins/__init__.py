"""Built-in plugins. Each sub-package is an ordinary pluggy plugin whose
``__init__`` holds only hook implementations (torch-free); the component classes
live in sibling modules imported when used."""
