"""python -m ptfuzz: the same entry point as the ptfuzz script."""
from .cli import main

main()
