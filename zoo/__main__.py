"""python -m zoo generate | chat | explain | demo   (python -m zoo COMMAND --help)"""
from .cli import main

if __name__ == "__main__":
    main()
