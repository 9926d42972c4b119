from voxshard.cli import main

main()
