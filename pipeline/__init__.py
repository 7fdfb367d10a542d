"""The job: options, graph assembly and the command line (`python -m pipeline ...`)."""
