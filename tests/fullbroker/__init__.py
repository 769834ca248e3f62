"""Tests of the full broker (fullbroker/)."""
