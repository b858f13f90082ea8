"""The control plane's Platform area: the model manager's side (docs/platform.md).

Registry (model vendors, models and versions, documents, deployment configs,
images), deployments through a :class:`~modelseal.deploy.backends.DeployBackend`,
NodePort records, gateway routes and model users' API keys, and the gateway
configuration that ``modelseal gateway --controlplane`` follows.

Same split as the Licensing area: ``routes`` thin, ``services`` hold the
logic, ``models`` the ORM rows, ``schemas`` the pydantic bodies. Every row
carries the tenant's ``vendor_id`` (a model manager's organisation is a
tenant like a vendor) and every query filters on it.
"""
