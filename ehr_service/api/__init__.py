"""HTTP only: parse the request, call an interaction, render the response."""
