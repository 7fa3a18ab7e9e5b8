"""What a person looks at: the figures and the report page."""
