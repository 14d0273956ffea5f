from ifm.cli import main

if __name__ == "__main__":      # not when a worker process of `fill` re-imports the main module
    raise SystemExit(main())
