from rancherd.cli import main

main()
