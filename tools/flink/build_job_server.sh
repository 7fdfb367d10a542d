#!/usr/bin/env bash
# Build Beam's Flink job server for the Python FlinkRunner (see README.md next to this).
#
#   tools/flink/build_job_server.sh      # last line of stdout: path of the launcher jar
#
# Output: .cache/flink/<beam version>/{lib/*.jar, beam-flink-job-server.jar}. Maven's own
# output goes to stderr so that stdout is only the path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pom="$here/pom.xml"
version="$(sed -n 's:.*<beam.version>\(.*\)</beam.version>.*:\1:p' "$pom" | head -n 1)"
out="$root/.cache/flink/$version"
launcher="$out/beam-flink-job-server.jar"
stamp="$out/build.sha256"

# The result is a function of the pom and of this script (which writes the manifest):
# rebuild only when one of them changed.
want="$(cat "$pom" "${BASH_SOURCE[0]}" | sha256sum | cut -d ' ' -f 1)"
if [[ -f "$launcher" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$launcher"
  exit 0
fi

for tool in java jar mvn; do
  command -v "$tool" > /dev/null || { echo "error: $tool is not on PATH" >&2; exit 1; }
done

# Start clean so that jars of an older pom cannot linger on the class path; the stamp is
# written last, so an interrupted build is redone next time.
rm -rf "$out"
mkdir -p "$out"
# A local repository of our own: a clean CI machine needs nothing from ~/.m2, and the
# download is cached with the rest of .cache/.
# (sed: Maven 3.8 prints stray colour resets even with -B -q.)
mvn -B -q -f "$pom" -Dmaven.repo.local="$root/.cache/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/lib" 2>&1 \
  | sed $'s/\e\\[0m//g' >&2

# No runnable job-server jar is published for this Beam version, so the launcher is an
# empty jar whose manifest names the driver and puts lib/ on the class path (relative to
# the jar). Beam starts it with plain `java -jar`, so the --add-opens that Flink needs on
# Java 17 must come from the manifest's Add-Opens (honoured only for the -jar jar).
{
  echo "Manifest-Version: 1.0"
  echo "Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver"
  echo "Add-Opens: java.base/java.lang java.base/java.net java.base/java.io" \
       "java.base/java.nio java.base/sun.nio.ch java.base/java.lang.reflect" \
       "java.base/java.text java.base/java.time java.base/java.util" \
       "java.base/java.util.concurrent java.base/java.util.concurrent.atomic" \
       "java.base/java.util.concurrent.locks"
  # One entry a line (manifest lines are limited in length): a continuation line starts
  # with a space that the parser drops, so the second space separates the entries.
  prefix="Class-Path: "
  for jar in "$out"/lib/*.jar; do echo "${prefix}lib/${jar##*/}"; prefix="  "; done
} > "$out/MANIFEST.MF"
jar --create --file "$launcher" --manifest "$out/MANIFEST.MF"

echo "$want" > "$stamp"
echo "$launcher"
