"""Code that the server (`app`) and the command line (`tailor_cli`) share.

Neither side owns it and it imports neither: pure functions over the API's JSON (today the
teacher-vs-student metrics both render). The server never imports the CLI, nor the CLI the
server.
"""
