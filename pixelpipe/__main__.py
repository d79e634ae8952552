from pixelpipe.cli import main

main()
