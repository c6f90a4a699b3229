"""The fine-tuning service: a REST API (`reidnet serve`) that runs train, evaluate, inference and
export jobs as child processes of the same library code the CLI uses.

Importing this package stays light; `reidnet.service.app.create_app` builds the FastAPI app.
"""
