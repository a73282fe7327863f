from stages._stage_server import run_on_server

run_on_server()  # with a warm server (trait-interp warm), the command runs there and this exits
from stages.cli import main  # noqa: E402

main()
