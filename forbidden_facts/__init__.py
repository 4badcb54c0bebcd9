"""forbidden-facts: a replication of 'Forbidden Facts' (arXiv 2312.08793).

Module names follow the science: `prompts` builds the paper's prompts, `metrics`
turns logits into probabilities and log-odds, `decompose` splits the final
residual stream into components, `patching` runs first-order and cumulative
patching, `identification` ranks the components, `heads` and `attack` study the
top suppressor heads, and `plots` / `tables` make the paper's figures and tables.
"""

__version__ = "0.1.0"
