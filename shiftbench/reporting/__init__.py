"""The report (Markdown, HTML), plots and dataset cards."""
