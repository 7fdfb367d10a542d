"""The flex-template files agree with the command line they launch.

Not exercised here: building the image (no Docker engine) and launching on Dataflow.
"""

import json
import os
import re
import sys

from tests.helpers import SAMPLE

ROOT = os.path.dirname(SAMPLE)
sys.path.insert(0, os.path.join(ROOT, "deploy"))

from launch import split_command  # noqa: E402


def test_every_template_parameter_is_an_option_of_the_job():
    from pipeline.options import _known_parser
    with open(os.path.join(ROOT, "deploy", "metadata.json")) as handle:
        metadata = json.load(handle)
    known = {opt for action in _known_parser()._actions for opt in action.option_strings}
    for parameter in metadata["parameters"]:
        if parameter["name"] != "command":
            assert f"--{parameter['name']}" in known, parameter["name"]
        for pattern in parameter.get("regexes", []):
            re.compile(pattern)


def test_launch_turns_the_command_parameter_into_the_subcommand():
    assert split_command(["--lists=gs://b/l.json", "--command=backfill", "--sink=x"]) == \
        ["backfill", "--lists=gs://b/l.json", "--sink=x"]
    assert split_command(["--subscription=projects/p/subscriptions/s"])[0] == "stream"


def test_the_image_copies_every_package_setup_py_installs():
    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as handle:
        dockerfile = handle.read()
    with open(os.path.join(ROOT, "setup.py")) as handle:
        packages = re.search(r"include=\[([^\]]*)\]", handle.read()).group(1)
    for package in re.findall(r'"(\w+)"', packages):
        assert f"COPY {package} ./{package}" in dockerfile, package
