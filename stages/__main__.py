from stages._cpu_kernels import pin_cpu_kernels

pin_cpu_kernels()  # before anything imports torch: the same CPU arithmetic on every x86 machine
from stages._stage_server import run_on_server  # noqa: E402

run_on_server()  # with a warm server (trait-interp warm), the command runs there and this exits
from stages.cli import main  # noqa: E402

main()
