# Tables (jinja2), the paper (latexmk) and the archive.
