"""Real services for the tests: started on free 127.0.0.1 ports, data in a
temporary directory, killed on teardown. Nothing here is a mock."""
