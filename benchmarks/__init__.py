"""Speed benchmarks: each module's ``main(argv)`` prints its figures and returns them as a dict."""
