from credex.node.cli import main

main()
