"""`python -m mall run [--full]`."""

from mall.launcher import main

if __name__ == "__main__":
    main()
