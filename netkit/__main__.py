from netkit.cli import main

main()
