from modelseal._entry import main

main()
