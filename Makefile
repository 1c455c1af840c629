# Two commands do all the set-up on a fresh machine:
#   make book   installs what it needs and builds the book with every chapter executed (_build/html), with the
#               ci profile (minutes on 2 cores); make book PROFILE=cpu | gpu builds another into _build/<profile>/
#   make test   installs what it needs and runs the whole test suite (package, autograder, book build)
#   make test-fast  only the package tests (pytest -m "not slow") and the docstring examples
#   make test-hostile  every hostile-notebook case (tests/test_hostile*.py; make test runs a sample)
#   make grade  grade the class in submitted/ (python -m tl_course.classroom grade; see book/instructors.md)
#   make test-colab  the Colab rehearsal of every chapter (make test runs it for one chapter)
# Offline: point TL_COURSE_DATA at a folder holding oxford-iiit-pet/images/ (default: ../shared/data if present).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

ifeq ($(TL_COURSE_DATA),)
  ifneq ($(wildcard ../shared/data),)
    export TL_COURSE_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: install book test test-fast test-colab test-hostile demo bench grade notebooks clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	touch $(STAMP)

# The profile the book's chapters run with (TL_COURSE_PROFILE): ci by default, the size CI checks and the README
# times. Each profile keeps its own execution cache, so switching never shows another profile's outputs:
# ci builds into _build/html, the others into _build/<profile>/_build/html.
PROFILE ?= ci
PROFILES = ci cpu gpu
BOOK_OUTPUT = $(if $(filter ci,$(PROFILE)),,--path-output _build/$(PROFILE))
BOOK_HTML = $(if $(filter ci,$(PROFILE)),_build/html,_build/$(PROFILE)/_build/html)

ifeq ($(filter $(PROFILE),$(PROFILES)),)
  $(error PROFILE=$(PROFILE) is not a profile: use one of $(PROFILES))
endif

book: $(STAMP)
	@echo "make book: building every chapter with the $(PROFILE) profile (TL_COURSE_PROFILE=$(PROFILE)) into $(BOOK_HTML)."
	@echo "           ci takes about 6 min on 2 cores; the others: make book PROFILE=cpu (hours on 2 cores) or PROFILE=gpu (a CUDA GPU); times in README.md."
	TL_COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . --builder html $(BOOK_OUTPUT)

# Two workers (pytest-xdist, one test module per worker at a time): the book build runs beside the
# autograder checks; each notebook kernel and
# book page gets one thread (OMP_NUM_THREADS=1), so two workers fill two cores without oversubscribing.
TEST_WORKERS ?= 2
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --doctest-modules tests tl_course

# The package tests only (no notebooks through nbgrader, no book build), then every docstring example of
# the package (each in a temporary folder, see conftest.py): a few minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q --doctest-modules tl_course

# The Colab rehearsal of every chapter (tests/test_colab.py): a fresh virtual environment with only what Colab
# preinstalls, the setup cell installing this checkout, each student notebook run with the reference answers.
test-colab: $(STAMP)
	TL_COURSE_COLAB=all $(BIN)/python -m pytest -q tests/test_colab.py -k rehearsal

# Every hostile-notebook case (issue 17): the fast ones and the whole hostile class, all of its cases
# (make test runs the fast ones and a sample of the class). A few minutes on 2 cores; the isolation checks need root.
test-hostile: $(STAMP)
	TL_COURSE_HOSTILE=all OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests/test_hostile.py tests/test_hostile_class.py tests/test_verdict.py

demo: $(STAMP)
	$(BIN)/python -m tl_course demo

bench: $(STAMP)
	$(BIN)/python -m tl_course.book.bench

# Grade every submitted/<student>/<assignment> of this course folder (options: make grade ARGS="--workers 4").
grade: $(STAMP)
	$(BIN)/python -m tl_course.classroom grade $(ARGS)

# Regenerate the student notebooks (notebooks/) from the instructor solutions (solutions/).
notebooks: $(STAMP)
	$(BIN)/python -m tl_course.classroom release

clean:
	rm -rf _build
