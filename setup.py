"""Installs the pipeline's packages, so Dataflow workers get them with --setup_file."""

import glob

import setuptools

setuptools.setup(
    name="dynlists",
    version="0.1.0",
    description="Streaming dynamic-list membership on Apache Beam",
    python_requires=">=3.11,<3.14",
    packages=setuptools.find_packages(include=["pipeline", "rules", "schemas", "storage",
                                               "transforms"]),
    package_data={"schemas": ["*.avsc"]},
    # the engine's evaluation loop in C; optional: without a C compiler the same engine
    # runs in pure Python (rules/compiler.py), only slower
    # (rules/_native.c includes its parts from rules/native/: one translation unit)
    ext_modules=[setuptools.Extension("rules._native", ["rules/_native.c"], optional=True,
                                      depends=sorted(glob.glob("rules/native/*.c")),
                                      extra_compile_args=["-O2"])],
    install_requires=[
        "apache-beam[gcp]==2.77.0",
        "fastavro==1.13.1",
        "plotly==7.1.0",
        "google-cloud-pubsub==2.44.0",
        "psycopg[binary]==3.3.9",
        "psycopg-pool==3.3.3",
    ],
    extras_require={"test": ["pytest==9.2.0", "hypothesis==6.170.17", "atheris==3.0.0"]},
)
