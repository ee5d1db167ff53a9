#!/usr/bin/env bash
# Runs the test suite. The session fixtures start (or reuse) the real services with the
# same code as `ioc services up`, and stop at the end those they started.
#
# A full run (no arguments) has two passes: every test on the broker IOC_BROKER chooses
# (auto: Apache Kafka when Java is present or installable, else Tansu), then the tests
# marked broker_sensitive (exactness under SIGKILL, restore, group rebalances, producer
# idempotence) again on the other broker, on its own port (the broker port + 100) so a
# broker kept from the first pass is never in the way. IOC_TEST_SECOND_PASS=0 skips it.
# With arguments, only pytest "$@" runs (one pass).
set -uo pipefail
cd "$(dirname "$0")/.."

pytest_pass() {
  .venv/bin/python -m pytest "$@"
  local rc=$?
  # pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
  if [ "$rc" -eq 5 ]; then echo "error: no tests were collected" >&2; return 1; fi
  return "$rc"
}

. scripts/test-env.sh

first=$(.venv/bin/python -c 'from ioc.services.broker import choose; from ioc.settings import ServiceSettings; print(choose(ServiceSettings())[0])')
echo "test pass 1: the whole suite on $first"
pytest_pass "$@"
rc=$?
if [ "$#" -eq 0 ] && [ "${IOC_TEST_SECOND_PASS:-1}" != 0 ]; then
  if [ "$first" = kafka ]; then second=tansu; else second=kafka; fi
  if [ "$second" = kafka ] && ! .venv/bin/python -c 'import sys; from ioc.services.apache_kafka import java_installable; sys.exit(not java_installable())'; then
    echo "test pass 2 skipped: Apache Kafka needs Java (or root with apt-get to install it)"
  else
    echo "test pass 2: the broker_sensitive tests on $second"
    IOC_BROKER=$second IOC_BROKER_PORT=$(( ${IOC_BROKER_PORT:-9092} + 100 )) \
      IOC_CONTROLLER_PORT=$(( ${IOC_BROKER_PORT:-9092} + 101 )) \
      pytest_pass -m broker_sensitive
    rc2=$?
    [ "$rc" -eq 0 ] && rc=$rc2
  fi
fi
exit "$rc"
