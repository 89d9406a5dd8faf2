from netkit.entry import main

main()
