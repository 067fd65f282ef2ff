"""``python -m flagd``: the same as the ``amplitude-flagd`` console script."""

from flagd.cli import main

if __name__ == "__main__":
    main()
