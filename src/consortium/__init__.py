"""consortium: collaborative (federated) learning among independent data holders."""

__version__ = "0.1.0"
