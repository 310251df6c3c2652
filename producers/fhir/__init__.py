"""The FHIR R4 edge: EMR resources in, v1 interactions out, pseudonymised on the way.

``mapping`` is the pure translation (a resource or Bundle in, outcomes out), ``pseudonyms``
the keyed hashes that replace every identifier of the EMR, ``r4`` the few facts of the
specification the mapping relies on, and ``emr`` a small simulated EMR for the demo.
The Kafka stage that runs the translation is ``consumers.fhir_gateway`` (docs/fhir.md).
"""
