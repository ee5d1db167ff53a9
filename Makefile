# The two commands of the README. Both create .venv (with the `ioc` command) first.
.PHONY: demo test lint venv services-down

venv:
	@scripts/bootstrap.sh

demo: venv
	.venv/bin/ioc up

test: venv lint
	scripts/test.sh

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

services-down: venv
	.venv/bin/ioc services down
