"""Rule semantics, beside the rule definitions: what a rule pays, when it may, and why not.

``rule`` defines an earning rule, ``awards`` what it pays, ``limits`` how often and how much,
``engine`` evaluates a program version against an account's view at event time. The account
aggregate only applies the decisions (lots, entries, usage) as facts.
"""
