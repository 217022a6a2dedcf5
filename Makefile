# The two commands of the README: `make demo` and `make test`. Each sets up .venv first when it is
# missing or out of date (scripts/setup_env.sh; idempotent).
VENV := .venv
STAMP := $(VENV)/.vpr_ros_setup
SETUP_INPUTS := requirements.txt requirements-nodeps.txt setup.py setup.cfg package.xml \
	scripts/setup_env.sh scripts/build_interfaces.py \
	$(wildcard vpr_ros_interfaces/*.txt vpr_ros_interfaces/*.xml vpr_ros_interfaces/msg/*.msg vpr_ros_interfaces/srv/*.srv)

.PHONY: setup demo test test-jazzy clean

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup_env.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/vpr_demo

test: setup
	$(VENV)/bin/python -m pytest test

# CI's second pass: the node, interface and bag tests against ROS 2 Jazzy wheels (.venv-jazzy).
JAZZY_TESTS := test/test_interfaces.py test/test_bags.py test/test_node.py test/test_node_robot.py test/test_multi_robot.py \
	test/test_lifecycle.py test/test_relocalization.py
test-jazzy: setup
	bash scripts/setup_jazzy_env.sh
	.venv-jazzy/bin/python -m pytest $(JAZZY_TESTS)

clean:
	rm -rf $(VENV) .venv-jazzy build
