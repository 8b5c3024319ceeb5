"""The kernel's own commands (services, status and down, a user's history and answers,
job runs); `streamrec.cli` puts them together with the planes' commands."""
